// ICU side of generate_regex_unicode_table.py: reads ICU regex patterns, one
// per line, on stdin (each matching single characters) and prints, per
// pattern, the code points of the universe it matches as "start-end" ranges
// on one line. The universe is given as the first input line: ranges
// "start-end" (hexadecimal) separated by spaces. The first output line is
// ICU's Unicode version (u_getUnicodeVersion).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/uregex.h>
#include <unicode/ustring.h>

static char line[1 << 22];

int main(void) {
    UVersionInfo version;
    u_getUnicodeVersion(version);
    printf("%d.%d\n", version[0], version[1]);
    if (!fgets(line, sizeof line, stdin)) return 1;
    UChar32 *points = malloc(sizeof(UChar32) * 0x110000);
    int32_t count = 0;
    for (char *token = strtok(line, " \n"); token; token = strtok(NULL, " \n")) {
        unsigned long start, end;
        if (sscanf(token, "%lx-%lx", &start, &end) != 2) return 1;
        for (unsigned long c = start; c <= end; c++) points[count++] = (UChar32)c;
    }
    UChar *text = malloc(sizeof(UChar) * 2 * (size_t)count);
    int32_t *owner = malloc(sizeof(int32_t) * 2 * (size_t)count);
    int32_t units = 0;
    for (int32_t i = 0; i < count; i++) {
        owner[units] = i;
        U16_APPEND_UNSAFE(text, units, points[i]);
    }
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        UErrorCode status = U_ZERO_ERROR;
        UParseError where;
        URegularExpression *regex = uregex_openC(line, 0, &where, &status);
        if (U_FAILURE(status)) {
            printf("error %s\n", u_errorName(status));
            continue;
        }
        uregex_setText(regex, text, units, &status);
        long open = -2, last = -2;
        while (uregex_findNext(regex, &status) && U_SUCCESS(status)) {
            UChar32 c = points[owner[uregex_start(regex, 0, &status)]];
            if (c != last + 1) {
                if (open >= 0) printf("%lX-%lX ", open, last);
                open = c;
            }
            last = c;
        }
        if (open >= 0) printf("%lX-%lX", open, last);
        printf("\n");
        uregex_close(regex);
    }
    return 0;
}
