@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Kolibri 1.1 (`kolibri1_1`): NVFP4 rounding bit for bit as torch rounds,
/// the layers as Kolibri1_1Config lays them out (indexers, reindexers,
/// key/value sharing, dense layers), Kolibri1_1Config's refusals, and plans
/// that drop what later layers read. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct Kolibri1_1Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "kolibri1_1-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "layer_types", "[\"sliding_attention\", \"full_attention\", \"indexed_attention\", \"sliding_attention\", \"indexed_attention\", \"indexed_attention\"]"),
        Mutant(name, "index_layers", "[2, 4]"), Mutant(name, "index_layers", "[4, 1]"), Mutant(name, "index_layers", "[1, 3]"),
        Mutant(name, "kv_source_layers", "[0, 1, 1, 3, 1]"), Mutant(name, "kv_source_layers", "[0, 1, 1, 1, 1, 5]"),
        Mutant(name, "kv_source_layers", "[0, 1, 1, 3, 2, 5]"), Mutant(name, "kv_source_layers", "[0, 1, 4, 3, 4, 5]"),
        Mutant(name, "kv_source_layers", "[0, 0, 1, 3, 1, 5]"),
        Mutant(name, "index_topk", "0"), Mutant(name, "index_pool_size", "0"), Mutant(name, "index_compression", "0"),
        Mutant(name, "index_pool_size", "10"), Mutant(name, "index_num_heads", "3"), Mutant(name, "index_num_heads", "0"),
        Mutant(name, "mlp_only_layers", "[6]"), Mutant(name, "mlp_only_intermediate_size", "0"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "num_local_experts", "9"),
        Mutant(name, "shared_expert_intermediate_size", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Values and their rounding by transformers' `nvfp4_fake_quantize`
    /// (blocks across magnitudes, ties at E2M1 and E4M3 halfway points,
    /// zeros), and scales and torch's float8_e4m3fn conversion of them.
    static let input: [UInt32] = [
        0xb69cf7af, 0x37b84264, 0xb8483241, 0x36927d22, 0x382a32ea, 0xb792d4de, 0x38cf6e35, 0xb8cc60ee,
        0xb653af6b, 0xb79ca8d9, 0x377e773e, 0xb763e6fd, 0x3869c453, 0x37513ecc, 0x3812f0a9, 0x37d52960,
        0x3a05e37b, 0x3aee5e2c, 0xba83b3c8, 0xbb5369c6, 0x3b05e413, 0x3a85ae0c, 0xb9aad005, 0x38d9398d,
        0x3a9052c6, 0x3b906b6f, 0x3b6f43ea, 0xbb18fd70, 0x3aff77d8, 0x3a6b19b3, 0x3b9bedee, 0xb99654e2,
        0xbbf3ba54, 0xbb95f8a2, 0xbbb238c3, 0x3bb28ee2, 0x3a17d370, 0xba8a9ebe, 0x3bdbaa38, 0xbc5e3d10,
        0xbb8adca3, 0x3b11070e, 0x3b04a052, 0x3c2e70f5, 0xbc75532d, 0x3a82eaa1, 0x3c28ae95, 0x3c51c814,
        0xbde92d54, 0x3f0d9843, 0xbdc10447, 0xbd1321e1, 0x3e25e4af, 0xbf14d6c0, 0x3ea25930, 0xbd7e4975,
        0x3e753119, 0xbea4fe48, 0xbed2fc04, 0x3e543bb9, 0xbe565784, 0xbe079453, 0x3ead5dea, 0x3eb05a63,
        0xbd9a03c5, 0xbed8baaf, 0x3ed7e75d, 0xbe83ea0e, 0xbfcaaff0, 0x3fb2b078, 0xbf8414e6, 0x3f91cda9,
        0x3f0330de, 0xbca292d6, 0xbf8f906e, 0xbefa6702, 0xbf22356a, 0xbf4a1214, 0xbf65d1d9, 0xbff19bf5,
        0x3fbf8827, 0xbfb9acb0, 0xbf3b1c6b, 0xc0bc23e5, 0x417e3131, 0x40399671, 0xc131e556, 0xbfa32b8f,
        0x40286e57, 0x402a2388, 0x401ae230, 0xc0fb2f1a, 0x410d4ad3, 0xbdcf5e51, 0xc0af63b0, 0xc01e684d,
        0xc2fe219e, 0xc31a00eb, 0xc2f47d9a, 0xc298f7b3, 0x42c94ba1, 0x436b1607, 0xc2854d54, 0x4150dd96,
        0xc2a804a7, 0x43cf91c4, 0x435c0195, 0x4333165b, 0xc3a22444, 0x43a2e29d, 0xc39ef78b, 0xc362a094,
        0xc3c35590, 0x4401570a, 0x44154914, 0xc1b05df1, 0x450fc355, 0xc39d3ce0, 0xc4334345, 0xc528264d,
        0xc3f11af6, 0x41f7401d, 0x43236676, 0x43ccb73e, 0x41917303, 0x4516dea3, 0xc44bed0f, 0x433ddc05,
        0x40c00000, 0x3e800000, 0x3f400000, 0x3fa00000, 0x3fe00000, 0x40200000, 0x40600000, 0x40a00000,
        0xbe800000, 0xc0200000, 0xc0a00000, 0x00000000, 0x80000000, 0x409ccccd, 0x3089705f, 0xc0600000,
        0x40cc0000, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a,
        0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a, 0x3e99999a,
        0x40e40000, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333,
        0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333, 0xbf333333,
        0x3cc00000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000,
        0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000, 0x3a800000,
        0x453b8000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000,
        0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000, 0x42c80000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
    ]
    static let expected: [UInt32] = [
        0x80000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x80000000,
        0x80000000, 0x80000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x3a800000, 0x3b000000, 0xba800000, 0xbb400000, 0x3b000000, 0x3a800000, 0x80000000, 0x00000000,
        0x3a800000, 0x3b800000, 0x3b800000, 0xbb000000, 0x3b000000, 0x3a800000, 0x3b800000, 0x80000000,
        0xbc000000, 0xbb800000, 0xbbc00000, 0x3bc00000, 0x3a800000, 0xba800000, 0x3bc00000, 0xbc400000,
        0xbb800000, 0x3b000000, 0x3b000000, 0x3c400000, 0xbc400000, 0x3a800000, 0x3c400000, 0x3c400000,
        0xbdc00000, 0x3f100000, 0xbdc00000, 0xbd400000, 0x3e100000, 0xbf100000, 0x3e900000, 0xbd400000,
        0x3e900000, 0xbe900000, 0xbec00000, 0x3e400000, 0xbe400000, 0xbe100000, 0x3ec00000, 0x3ec00000,
        0x80000000, 0xbef00000, 0x3ef00000, 0xbea00000, 0xbff00000, 0x3fa00000, 0xbf700000, 0x3fa00000,
        0x3ef00000, 0x80000000, 0xbfa00000, 0xbef00000, 0xbf200000, 0xbf700000, 0xbf700000, 0xbff00000,
        0x3fb00000, 0xbfb00000, 0xbfb00000, 0xc0b00000, 0x41840000, 0x40300000, 0xc1300000, 0xbfb00000,
        0x40300000, 0x40300000, 0x40300000, 0xc1040000, 0x41040000, 0x80000000, 0xc0b00000, 0xc0300000,
        0xc3100000, 0xc3100000, 0xc2d80000, 0xc2900000, 0x42d80000, 0x43580000, 0xc2900000, 0x00000000,
        0xc2900000, 0x43d80000, 0x43580000, 0x43100000, 0xc3900000, 0x43900000, 0xc3900000, 0xc3580000,
        0xc3e00000, 0x43e00000, 0x44280000, 0x80000000, 0x45280000, 0xc3600000, 0xc4280000, 0xc5280000,
        0xc3e00000, 0x00000000, 0x43600000, 0x43e00000, 0x00000000, 0x45280000, 0xc4600000, 0x43600000,
        0x40c00000, 0x00000000, 0x3f800000, 0x3f800000, 0x40000000, 0x40000000, 0x40800000, 0x40800000,
        0x80000000, 0xc0000000, 0xc0800000, 0x00000000, 0x80000000, 0x40800000, 0x00000000, 0xc0800000,
        0x40c00000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000,
        0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000,
        0x40f00000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000,
        0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000, 0xbf200000,
        0x3cc00000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x45280000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
    ]
    static let scales: [UInt32] = [
        0x3b000000, 0x4095652b, 0x41155d2b, 0x416007c0, 0x4195592b, 0x41baae76, 0x41e003c0, 0x4202ac86,
        0x4215572b, 0x422801d0, 0x423aac76, 0x424d571b, 0x426001c0, 0x4272ac66, 0x4282ab86, 0x428c00d8,
        0x4295562b, 0x429eab7e, 0x42a800d0, 0x42b15623, 0x42baab76, 0x42c400c8, 0x42cd561b, 0x42d6ab6e,
        0x42e000c0, 0x42e95613, 0x42f2ab66, 0x42fc00b9, 0x4302ab06, 0x430755af, 0x430c0058, 0x4310ab02,
        0x431555ab, 0x431a0054, 0x431eaafe, 0x432355a7, 0x43280050, 0x432caafa, 0x433155a3, 0x4336004c,
        0x433aaaf6, 0x433f559f, 0x43440048, 0x4348aaf2, 0x434d559b, 0x43520044, 0x4356aaee, 0x435b5597,
        0x43600040, 0x4364aae9, 0x43695592, 0x436e003c, 0x4372aae5, 0x4377558e, 0x437c0038, 0x43805570,
        0x4382aac5, 0x4385001a, 0x4387556e, 0x4389aac3, 0x438c0018, 0x438e556c, 0x4390aac1, 0x43930016,
        0x4395556a, 0x4397aabf, 0x439a0014, 0x439c5569, 0x439eaabd, 0x43a10012, 0x43a35567, 0x43a5aabb,
        0x43a80010, 0x43aa5565, 0x43acaab9, 0x43af000e, 0x43b15563, 0x43b3aab7, 0x43b6000c, 0x43b85561,
        0x43baaab5, 0x43bd000a, 0x43bf555f, 0x43c1aab3, 0x43c40008, 0x43c6555d, 0x43c8aab1, 0x43cb0006,
        0x43cd555b, 0x43cfaaaf, 0x43d20004, 0x43d45559, 0x43d6aaad, 0x43d90002, 0x43db5557, 0x43ddaaab,
        0x43e00000, 0x3b000000, 0x3b118dfa, 0x3b258449, 0x3b3c3772, 0x3b560795, 0x3b7361fe, 0x3b8a617c,
        0x3b9d5bed, 0x3bb2f0ad, 0x3bcb7b20, 0x3be7632e, 0x3c038f81, 0x3c159a7e, 0x3c2a1ef3, 0x3c4173c2,
        0x3c5bfbb6, 0x3c7a2726, 0x3c8e3ae9, 0x3ca1bc7f, 0x3cb7eaee, 0x3cd12423, 0x3cedd2ea, 0x3d07385d,
        0x3d19c3d6, 0x3d2eda67, 0x3d46d55b, 0x3d621a3d, 0x3d808e42, 0x3d922fc0, 0x3da63c3e, 0x3dbd08a2,
        0x3dd6f574, 0x3df4707d, 0x3e0afb48, 0x3e1e0ad0, 0x3e33b78d, 0x3e4c5d46, 0x3e686458, 0x3e8421b8,
        0x3e9640c3, 0x3eaadc06, 0x3ec24ac3, 0x3edcf034, 0x3efb3d2c, 0x3f0ed8fc, 0x3f227040, 0x3f38b756,
        0x3f520c93, 0x3f6edb46, 0x3f87ceab, 0x3f9a6ec1, 0x3faf9cc3, 0x3fc7b260, 0x3fe31592, 0x40011d29,
        0x4012d23f, 0x4026f506, 0x403ddac2, 0x4057e466, 0x40758033, 0x408b95c5, 0x409eba7d, 0x40b47f52,
        0x40cd4070, 0x40e966aa, 0x4104b498, 0x4116e7c7, 0x412b99f2, 0x414322bc, 0x415de5cb, 0x417c5471,
        0x418f77c5, 0x41a324d0, 0x41b984aa, 0x41d2f610, 0x41efe4be, 0x4208659b, 0x421b1a65, 0x42305ff0,
        0x42489051, 0x426411f4, 0x4281aca8, 0x4293756c, 0x42a7ae95, 0x42beadc3, 0x42d8d457, 0x42f6910d,
        0x430c30e8, 0x431f6ae7, 0x433547ed, 0x434e248e, 0x436a6a11, 0x43854815, 0x43978f7e, 0x43ac58aa,
        0x43c3fb9b, 0x43dedc69, 0x3b400000, 0x3ba00000, 0x3c080000, 0x3c880000, 0x3f880000, 0x3f980000,
        0x40440000, 0x43780000, 0x43dc0000,
    ]
    static let rounded: [UInt32] = [
        0x3b000000, 0x40900000, 0x41100000, 0x41600000, 0x41900000, 0x41c00000, 0x41e00000, 0x42000000,
        0x42100000, 0x42300000, 0x42400000, 0x42500000, 0x42600000, 0x42700000, 0x42800000, 0x42900000,
        0x42900000, 0x42a00000, 0x42b00000, 0x42b00000, 0x42c00000, 0x42c00000, 0x42d00000, 0x42d00000,
        0x42e00000, 0x42f00000, 0x42f00000, 0x43000000, 0x43000000, 0x43000000, 0x43100000, 0x43100000,
        0x43100000, 0x43200000, 0x43200000, 0x43200000, 0x43300000, 0x43300000, 0x43300000, 0x43300000,
        0x43400000, 0x43400000, 0x43400000, 0x43500000, 0x43500000, 0x43500000, 0x43500000, 0x43600000,
        0x43600000, 0x43600000, 0x43700000, 0x43700000, 0x43700000, 0x43700000, 0x43800000, 0x43800000,
        0x43800000, 0x43800000, 0x43800000, 0x43900000, 0x43900000, 0x43900000, 0x43900000, 0x43900000,
        0x43900000, 0x43900000, 0x43a00000, 0x43a00000, 0x43a00000, 0x43a00000, 0x43a00000, 0x43a00000,
        0x43b00000, 0x43b00000, 0x43b00000, 0x43b00000, 0x43b00000, 0x43b00000, 0x43b00000, 0x43c00000,
        0x43c00000, 0x43c00000, 0x43c00000, 0x43c00000, 0x43c00000, 0x43c00000, 0x43d00000, 0x43d00000,
        0x43d00000, 0x43d00000, 0x43d00000, 0x43d00000, 0x43d00000, 0x43e00000, 0x43e00000, 0x43e00000,
        0x43e00000, 0x3b000000, 0x3b000000, 0x3b000000, 0x3b000000, 0x3b800000, 0x3b800000, 0x3b800000,
        0x3b800000, 0x3bc00000, 0x3bc00000, 0x3c000000, 0x3c000000, 0x3c200000, 0x3c200000, 0x3c400000,
        0x3c600000, 0x3c800000, 0x3c900000, 0x3ca00000, 0x3cb00000, 0x3cd00000, 0x3cf00000, 0x3d000000,
        0x3d200000, 0x3d300000, 0x3d400000, 0x3d600000, 0x3d800000, 0x3d900000, 0x3da00000, 0x3dc00000,
        0x3dd00000, 0x3df00000, 0x3e100000, 0x3e200000, 0x3e300000, 0x3e500000, 0x3e700000, 0x3e800000,
        0x3e900000, 0x3eb00000, 0x3ec00000, 0x3ee00000, 0x3f000000, 0x3f100000, 0x3f200000, 0x3f400000,
        0x3f500000, 0x3f700000, 0x3f800000, 0x3fa00000, 0x3fb00000, 0x3fc00000, 0x3fe00000, 0x40000000,
        0x40100000, 0x40200000, 0x40400000, 0x40500000, 0x40700000, 0x40900000, 0x40a00000, 0x40b00000,
        0x40d00000, 0x40f00000, 0x41000000, 0x41100000, 0x41300000, 0x41400000, 0x41600000, 0x41800000,
        0x41900000, 0x41a00000, 0x41c00000, 0x41d00000, 0x41f00000, 0x42100000, 0x42200000, 0x42300000,
        0x42500000, 0x42600000, 0x42800000, 0x42900000, 0x42a00000, 0x42c00000, 0x42e00000, 0x42f00000,
        0x43100000, 0x43200000, 0x43300000, 0x43500000, 0x43700000, 0x43800000, 0x43900000, 0x43b00000,
        0x43c00000, 0x43e00000, 0x3b800000, 0x3b800000, 0x3c000000, 0x3c800000, 0x3f800000, 0x3fa00000,
        0x40400000, 0x43800000, 0x43e00000,
    ]

    /// Token counts past any sequence read as Python reads them (these
    /// overflowed the budget's sum or the local tokens' start): past every
    /// sequence, no selection (as 10,000); far below zero, no budget and no
    /// local tokens (as -1,000).
    @Test(arguments: ["index_topk", "index_num_local_tokens", "index_num_sink_tokens"])
    func extremeTokenCountsReadAsPythonReadsThem(_ key: String) throws {
        let past = try scores(EditedFixture(Self.name) { $0[key] = 10_000 })
        #expect(try scores(EditedFixture(Self.name) { $0[key] = Int.max }) == past)
        guard key != "index_topk" else { return }  // at least 1, refused below
        let below = try scores(EditedFixture(Self.name) { $0[key] = -1_000 })
        #expect(try scores(EditedFixture(Self.name) { $0[key] = Int.min }) == below)
        #expect(below != past)
    }

    @Test func nvfp4RoundsAsTorch() {
        let values = NVFP4.fakeQuantized(Self.input.map(Float.init(bitPattern:)))
        #expect(values.map(\.bitPattern) == Self.expected)
        #expect(Self.scales.map { NVFP4.e4m3(Float(bitPattern: $0)).bitPattern } == Self.rounded)
    }

    /// Sliding layers 0 and 3 rotate within 8 tokens; the indexed layers
    /// have no rotary and select keys; 1 and 4 choose pools, 2 and 5 reuse
    /// them; 2 and 4 project queries only and read layer 1's keys and values;
    /// layer 0's MLP is dense.
    @Test func layersAsKolibri1_1Builds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<6 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = [0, 3].contains(index)
            #expect((attention.rotary != nil) == sliding && attention.slidingWindow == (sliding ? 8 : nil))
            #expect((attention.keyPool == nil) == sliding)
            #expect(attention.keyPool?.selectsPool == (sliding ? nil : [1, 4].contains(index)))
            let reads: AttentionSharing? = [2, 4].contains(index) ? .reuse(layer: 1) : index == 1 ? .store(layer: 1) : nil
            #expect(attention.keyValueSharing == reads)
            #expect(attention.projection.outFeatures == ([2, 4].contains(index) ? 64 : 128))
            if case .mixture? = block.mlp?.feedForward { #expect(index != 0) } else { #expect(index == 0) }
        }
    }

    /// A dropped block whose keys and values a running layer reads is
    /// refused; one whose indexer's pool a later reindexer reads passes
    /// the pool on from the last kept indexer; a dropped attention still
    /// makes them (no export).
    @Test func plansDroppingWhatLaterLayersRead() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.planProblem(DropPlan(blocks: [1])) != nil)
        // Without indexers 1 and 4, reindexer 5 has no pool.
        #expect(model.planProblem(DropPlan(blocks: [1, 2, 4])) != nil)
        #expect(model.planProblem(DropPlan(blocks: [1, 2, 4, 5])) == nil)
        let attentionDropped = DropPlan(attention: [1])
        #expect(model.planProblem(attentionDropped) == nil)
        let sharing = try model.attentionSharing(skipping: attentionDropped)
        #expect(sharing.keysValues[1] == .storeOnly(layer: 1) && sharing.keySelections[1] == .storeOnly(layer: 1))
        #expect(model.exportProblem(attentionDropped) != nil)
        let reindexed = try model.attentionSharing(skipping: DropPlan(blocks: [4]))
        #expect(reindexed.keySelections[5] == .reuse(layer: 1))
        #expect(model.exportProblem(DropPlan(blocks: [4])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [0])) == nil)
        // Indexer 4's dropped attention still chooses reindexer 5's pool from layer 1's keys, which layer 1 stores.
        let indexerDropped = try model.attentionSharing(skipping: DropPlan(attention: [2, 4]))
        #expect(indexerDropped.keysValues[1] == .store(layer: 1) && indexerDropped.keySelections[4] == .storeOnly(layer: 4))
        #expect(model.planProblem(DropPlan(attention: [4], blocks: [1, 2])) != nil)
    }

    /// Cached decoding (as `drop` times it) gives the batched forward's
    /// states, the prefill of 16 rows longer than the pool and the budget:
    /// with an indexer's attention dropped (its pool still chosen for the
    /// reindexer, from the shared keys), with the key/value source's
    /// attention dropped, and with an indexer's block dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 24, prefill: 16,
            plans: [.none, DropPlan(attention: [1]), DropPlan(attention: [2, 4]), DropPlan(blocks: [4]), DropPlan(blocks: [0, 2])],
            label: Self.name)
    }
}
