// A small C face over ICU's regex engine (Debian: libicu-dev) for the
// tokenizer regexes: find every match of a pattern in UTF-8 text, with a
// step budget so that a pattern with catastrophic backtracking fails
// instead of running for hours. C rather than Swift because ICU's exported
// names carry the library version (uregex_open_72), which its headers hide
// behind macros Swift cannot see.
#ifndef DROPTRACE_ICU_REGEX_H
#define DROPTRACE_ICU_REGEX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A compiled pattern; one per thread at a time (clone to share).
typedef struct droptrace_regex droptrace_regex;

/// Outcome of droptrace_regex_find_all.
typedef enum {
    DROPTRACE_REGEX_DONE = 0,
    /// A match attempt, or the whole search, went over its step budget.
    DROPTRACE_REGEX_OVER_BUDGET = 1,
    /// The backtracking stack outgrew ICU's limit (8 MB).
    DROPTRACE_REGEX_STACK_FULL = 2,
    /// Anything else ICU refused (text too long, invalid UTF-8, no memory).
    DROPTRACE_REGEX_FAILED = 3,
} droptrace_regex_status;

/// Step budgets, in ICU's time-limit units ("ticks" of 10,000 steps of the
/// match engine, roughly a millisecond each). `per_mega_unit` terms scale
/// with the text, in ticks per 1,000,000 UTF-16 units.
typedef struct {
    /// One match attempt (one starting position) may take
    /// attempt_base + attempt_per_mega_unit * (units from its start to the end) / 1e6.
    int64_t attempt_base;
    int64_t attempt_per_mega_unit;
    /// The whole search may take total_base + total_per_mega_unit * (text units) / 1e6.
    int64_t total_base;
    int64_t total_per_mega_unit;
} droptrace_regex_budget;

/// Compiles `pattern` (UTF-8, `length` bytes) with `^`/`$` matching at line
/// breaks. NULL on a syntax error, with ICU's error name in `error`
/// (`error_capacity` bytes, NUL-terminated).
droptrace_regex *droptrace_regex_open(const char *pattern, int32_t length, char *error, int32_t error_capacity);

/// A copy sharing the compiled pattern, for use on another thread; NULL when out of memory.
droptrace_regex *droptrace_regex_clone(const droptrace_regex *regex);

void droptrace_regex_close(droptrace_regex *regex);

/// Calls `on_match(context, start, end)` for each match of `regex` in `text`
/// (UTF-8, `length` bytes) left to right, as ICU's findNext reports them
/// (empty matches included), with `start` and `end` UTF-8 byte offsets.
/// Stops early, with the status saying why, when a budget is exceeded or ICU
/// fails (the matches reported until then stand), or when `on_match`
/// returns nonzero (then with DROPTRACE_REGEX_DONE).
droptrace_regex_status droptrace_regex_find_all(
    droptrace_regex *regex, const char *text, int64_t length, droptrace_regex_budget budget,
    int32_t (*on_match)(void *context, int64_t start, int64_t end), void *context);

/// Starts a ledger of `ticks` (10,000 steps each) that every search on this
/// thread draws on until `droptrace_regex_ledger_end`: a search stops over
/// budget once the ledger is spent, so many short searches (one text's
/// pieces) cannot each take their own budget in full. Returns 1 when it
/// started one, 0 when one was already running (which stays).
int32_t droptrace_regex_ledger_begin(int64_t ticks);

/// Ends this thread's ledger.
void droptrace_regex_ledger_end(void);

/// The Unicode version of ICU's character data (u_getUnicodeVersion), as
/// major * 100 + minor: 1500 for Unicode 15.0.
int32_t droptrace_icu_unicode_version(void);

#ifdef __cplusplus
}
#endif

#endif
