import CHDF5
import Foundation
import ScoreStore
import Testing

/// What a user adds at a store's root (with h5py, then `droptrace reseal`)
/// is carried over when a later trace rewrites the store from its rows:
/// groups and datasets with their values, root attributes, soft and
/// external links as links. It was dropped without a word.
@Suite struct StoreAdditionsTests {
    @Test func aTraceRewriteKeepsWhatAUserAddedAtTheRoot() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        let output = scratch.path("out")
        let store = output.appendingPathComponent("scores.h5")
        func trace() throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(["trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
                                      "--output", output.path])
        }
        try #require(try trace().status == 0)

        // Objects and attributes through droptrace's own writer (it renews the checksum on close) ...
        let file = try HDF5File.open(at: store, writable: true)
        try file.createDataset("notes/loss", values: [2.5, 2.25, 2.0])
        try file.createDataset("notes/labels", strings: ["warm-up", "decay"])
        try file.group("notes").setAttribute("author", "me")
        try file.setAttribute("run_id", "seed-7")
        try file.setAttribute("learning_rates", [3e-4, 1e-4])
        try file.createDataset("analysis/mine", values: [1.0])  // inside droptrace's group: droptrace's to rewrite
        try file.close()
        // ... and links, an object reference, as another tool adds them: the checksum is then stale.
        _ = H5open()
        let id = H5Fopen(store.path, 1 /* H5F_ACC_RDWR */, 0)
        try #require(id >= 0)
        #expect(H5Lcreate_soft("/scores/attention", id, "latest_attention", 0, 0) >= 0)
        #expect(H5Lcreate_external("baseline.h5", "/scores/attention", id, "baseline_attention", 0, 0) >= 0)
        // Second names (h5py: f["attention_alias"] = f["scores/attention"]) of droptrace's objects.
        #expect(H5Lcreate_hard(id, "/scores/attention", id, "attention_alias", 0, 0) >= 0)
        #expect(H5Lcreate_hard(id, "/analysis/mine", id, "mine_alias", 0, 0) >= 0)
        var reference = hobj_ref_t()
        #expect(H5Rcreate(&reference, id, "/notes", H5R_OBJECT, -1) >= 0)
        let space = H5Screate(H5S_SCALAR)
        let attribute = H5Acreate2(id, "notes_ref", H5T_STD_REF_OBJ_g, space, 0, 0)
        #expect(H5Awrite(attribute, H5T_STD_REF_OBJ_g, &reference) >= 0)
        H5Aclose(attribute)
        H5Sclose(space)
        #expect(H5Fclose(id) >= 0)
        #expect(try DroptraceCommand.run(["reseal", output.path]).status == 0)

        // A new checkpoint: the store is rewritten with two rows.
        try series.add(step: 200)
        let second = try trace()
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stderr.contains("keeping what was added to the store: /attention_alias, /baseline_attention, /latest_attention, /mine_alias, /notes; root attributes 'learning_rates', 'notes_ref', 'run_id'"), "\(second.stderr)")
        #expect(second.stderr.contains("not kept: root attribute 'notes_ref' holds HDF5 object references, which would point into the old file; /mine_alias was another name of /analysis/mine, which this store no longer has"), "\(second.stderr)")

        let reread = try HDF5File.open(at: store)
        #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-100", "checkpoint-200"])
        #expect(try reread.dataset("notes/loss").read(as: Double.self) == [2.5, 2.25, 2.0])
        #expect(try reread.dataset("notes/labels").readStrings() == ["warm-up", "decay"])
        #expect(try reread.group("notes").stringAttribute("author") == "me")
        #expect(try reread.stringAttribute("run_id") == "seed-7")
        #expect(try reread.numericAttribute("learning_rates", as: Double.self) == [3e-4, 1e-4])
        #expect(try !reread.hasAttribute("notes_ref"), "a reference into the old file is not copied")
        #expect(try !reread.exists("analysis/mine"))
        // The soft link still points at the scores, now the new ones.
        #expect(try reread.dataset("latest_attention").shape == reread.dataset("scores/attention").shape)
        #expect(try reread.dataset("latest_attention").shape.first == 2)
        // A second name of droptrace's scores names the new scores, not a copy of the old ones.
        #expect(try reread.dataset("attention_alias").read(as: Float.self) == reread.dataset("scores/attention").read(as: Float.self))
        #expect(try !reread.exists("mine_alias"))
        try reread.close()
        let id2 = H5Fopen(store.path, 0 /* H5F_ACC_RDONLY */, 0)
        var info = H5L_info_t()
        #expect(H5Lget_info(id2, "latest_attention", &info, 0) >= 0 && info.type == H5L_TYPE_SOFT)
        #expect(H5Lget_info(id2, "baseline_attention", &info, 0) >= 0 && info.type == H5L_TYPE_EXTERNAL)
        H5Fclose(id2)
        #expect(try DroptraceCommand.run(["report", output.path]).status == 0)
    }
}
