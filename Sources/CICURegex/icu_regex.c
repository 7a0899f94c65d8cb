#include "icu_regex.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/uregex.h>
#include <unicode/ustring.h>

struct droptrace_regex {
    URegularExpression *icu;
};

/// Ticks the searches on this thread may still take before the current
/// ledger (`droptrace_regex_ledger_begin`) is spent; -1 without a ledger.
static __thread int64_t ledger_ticks = -1;

int32_t droptrace_regex_ledger_begin(int64_t ticks) {
    if (ledger_ticks >= 0) return 0;
    ledger_ticks = ticks < 0 ? 0 : ticks;
    return 1;
}

void droptrace_regex_ledger_end(void) { ledger_ticks = -1; }

/// Step accounting shared by the two ICU callbacks during one search.
typedef struct {
    int64_t length;          // text length in UTF-16 units
    int64_t steps;           // ticks since the search began
    int64_t reported;        // the count ICU last reported (it restarts with each findNext)
    int64_t carried;         // ticks of this search's earlier findNext calls
    int64_t attempt_start;   // ticks when the current attempt began
    int64_t attempt_limit;   // ticks the current attempt may take
    int64_t total_limit;     // ticks the whole search may take
    droptrace_regex_budget budget;
} search_state;

static int64_t scaled(int64_t base, int64_t per_mega_unit, int64_t units) {
    // units < 2^31 (ICU's limit) and per_mega_unit small, so no overflow.
    return base + per_mega_unit * units / 1000000;
}

static void begin_attempt(search_state *state, int64_t at) {
    state->attempt_start = state->steps;
    state->attempt_limit = scaled(state->budget.attempt_base, state->budget.attempt_per_mega_unit, state->length - at);
}

/// Called by ICU every tick (10,000 steps) of a match operation.
static UBool on_tick(const void *context, int32_t steps) {
    search_state *state = (search_state *)context;
    if (steps < state->reported) state->carried += state->reported;
    state->reported = steps;
    state->steps = state->carried + steps;
    return state->steps - state->attempt_start < state->attempt_limit && state->steps < state->total_limit
        && (ledger_ticks < 0 || state->steps < ledger_ticks);
}

/// Called by ICU each time a search moves on to the next starting position.
static UBool on_next_start(const void *context, int64_t index) {
    begin_attempt((search_state *)context, index);
    return 1;
}

droptrace_regex *droptrace_regex_open(const char *pattern, int32_t length, char *error, int32_t error_capacity) {
    UErrorCode status = U_ZERO_ERROR;
    int32_t units = 0;
    u_strFromUTF8(NULL, 0, &units, pattern, length, &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) status = U_ZERO_ERROR;
    UChar *utf16 = U_SUCCESS(status) ? malloc(sizeof(UChar) * ((size_t)units + 1)) : NULL;
    if (U_SUCCESS(status) && utf16 == NULL) status = U_MEMORY_ALLOCATION_ERROR;
    if (U_SUCCESS(status)) u_strFromUTF8(utf16, units + 1, NULL, pattern, length, &status);
    URegularExpression *icu = NULL;
    if (U_SUCCESS(status)) {
        UParseError where;
        icu = uregex_open(utf16, units, UREGEX_MULTILINE | UREGEX_UNIX_LINES, &where, &status);
    }
    free(utf16);
    droptrace_regex *regex = U_SUCCESS(status) ? malloc(sizeof(droptrace_regex)) : NULL;
    if (regex == NULL) {
        if (U_SUCCESS(status)) status = U_MEMORY_ALLOCATION_ERROR;
        if (icu != NULL) uregex_close(icu);
        if (error_capacity > 0) {
            strncpy(error, u_errorName(status), (size_t)error_capacity - 1);
            error[error_capacity - 1] = 0;
        }
        return NULL;
    }
    regex->icu = icu;
    return regex;
}

droptrace_regex *droptrace_regex_clone(const droptrace_regex *regex) {
    UErrorCode status = U_ZERO_ERROR;
    URegularExpression *icu = uregex_clone(regex->icu, &status);
    if (U_FAILURE(status)) return NULL;
    droptrace_regex *copy = malloc(sizeof(droptrace_regex));
    if (copy == NULL) {
        uregex_close(icu);
        return NULL;
    }
    copy->icu = icu;
    return copy;
}

void droptrace_regex_close(droptrace_regex *regex) {
    if (regex == NULL) return;
    uregex_close(regex->icu);
    free(regex);
}

/// Walks UTF-16 offsets forward alongside UTF-8 ones (matches come in order).
typedef struct {
    const UChar *units;
    int64_t utf16;
    int64_t utf8;
} offset_walker;

static int64_t utf8_offset(offset_walker *walker, int64_t target) {
    while (walker->utf16 < target) {
        UChar unit = walker->units[walker->utf16];
        if (unit < 0x80) {
            walker->utf8 += 1;
            walker->utf16 += 1;
        } else if (unit < 0x800) {
            walker->utf8 += 2;
            walker->utf16 += 1;
        } else if (U16_IS_LEAD(unit)) {
            // Valid UTF-8 input, so a lead surrogate always has its trail.
            walker->utf8 += 4;
            walker->utf16 += 2;
        } else {
            walker->utf8 += 3;
            walker->utf16 += 1;
        }
    }
    return walker->utf8;
}

droptrace_regex_status droptrace_regex_find_all(
    droptrace_regex *regex, const char *text, int64_t length, droptrace_regex_budget budget,
    int32_t (*on_match)(void *context, int64_t start, int64_t end), void *context) {
    if (length > INT32_MAX) return DROPTRACE_REGEX_FAILED;
    UErrorCode status = U_ZERO_ERROR;
    int32_t units = 0;
    u_strFromUTF8(NULL, 0, &units, text, (int32_t)length, &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) status = U_ZERO_ERROR;
    if (U_FAILURE(status)) return DROPTRACE_REGEX_FAILED;
    UChar *utf16 = malloc(sizeof(UChar) * ((size_t)units + 1));
    if (utf16 == NULL) return DROPTRACE_REGEX_FAILED;
    u_strFromUTF8(utf16, units + 1, NULL, text, (int32_t)length, &status);

    search_state state = {.length = units, .budget = budget};
    state.total_limit = scaled(budget.total_base, budget.total_per_mega_unit, units);
    URegularExpression *icu = regex->icu;
    uregex_setText(icu, utf16, units, &status);
    uregex_setMatchCallback(icu, on_tick, &state, &status);
    uregex_setFindProgressCallback(icu, on_next_start, &state, &status);
    offset_walker walker = {.units = utf16};
    int64_t next = 0;
    while (U_SUCCESS(status)) {
        begin_attempt(&state, next);
        if (!uregex_findNext(icu, &status) || U_FAILURE(status)) break;
        int64_t start = uregex_start64(icu, 0, &status);
        int64_t end = uregex_end64(icu, 0, &status);
        if (U_FAILURE(status)) break;
        int64_t start8 = utf8_offset(&walker, start);
        if (on_match(context, start8, utf8_offset(&walker, end)) != 0) break;
        next = end;
    }
    if (ledger_ticks >= 0) ledger_ticks = state.steps < ledger_ticks ? ledger_ticks - state.steps : 0;
    // Leave no pointer to the buffer or the stack behind in the regex.
    static const UChar nothing[1] = {0};
    UErrorCode ignored = U_ZERO_ERROR;
    uregex_setText(icu, nothing, 0, &ignored);
    uregex_setMatchCallback(icu, NULL, NULL, &ignored);
    uregex_setFindProgressCallback(icu, NULL, NULL, &ignored);
    free(utf16);
    switch (status) {
    case U_ZERO_ERROR: return DROPTRACE_REGEX_DONE;
    case U_REGEX_STOPPED_BY_CALLER: return DROPTRACE_REGEX_OVER_BUDGET;
    case U_REGEX_STACK_OVERFLOW: return DROPTRACE_REGEX_STACK_FULL;
    default: return DROPTRACE_REGEX_FAILED;
    }
}

int32_t droptrace_icu_unicode_version(void) {
    UVersionInfo version;
    u_getUnicodeVersion(version);
    return version[0] * 100 + version[1];
}
