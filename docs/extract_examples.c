/* extract_examples — writes each ```c block of a Markdown file to its own .c file.
 *
 *     extract_examples GUIDE.md OUT_1.c ... OUT_n.c
 *
 * Block k (1-based, in file order) goes to OUT_k.c. A block opens with a line that is exactly
 * "```c" and closes with a line that is exactly "```". The build (docs/meson.build) compiles
 * and runs every block, so the guide cannot drift from the API without a failing build or test.
 * Each output starts with a #line directive, so a compiler message names the guide's own line.
 *
 * Checks, each a non-zero exit with a message naming GUIDE.md and the line:
 *  - the number of blocks equals the number of outputs (meson counts them when it configures);
 *  - each block's first line is a comment "/" "* NAME.c: ..." whose NAME.c is its output's file
 *    name, so a test name always matches its block;
 *  - each block has a main function and is closed.
 * Only the C standard library is used: building the docs needs nothing but the compiler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LINE = 4096 };

/* The file name part of a path ("a/b/ownership.c" -> "ownership.c"). */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *back = strrchr(path, '\\');
    if (back && (!slash || back > slash))
        slash = back;
    return slash ? slash + 1 : path;
}

/* Removes a trailing "\n" and "\r" (a guide saved with CRLF line ends still works). */
static void chomp(char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

/* True when line is the block's expected first line "/" "* NAME.c:". */
static int header_ok(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncmp(line, "/* ", 3) == 0 && strncmp(line + 3, name, n) == 0 && line[3 + n] == ':';
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s GUIDE.md OUT_1.c ... OUT_n.c\n", argv[0]);
        return 2;
    }
    const char *guide = argv[1];
    int n_out = argc - 2;
    FILE *in = fopen(guide, "r");
    if (!in) {
        perror(guide);
        return 1;
    }

    char line[MAX_LINE];
    long lineno = 0, open_line = 0;
    int block = 0;    /* blocks seen so far */
    FILE *out = NULL; /* the open block's output, NULL outside a block */
    int first = 0;    /* the next line is the block's first */
    int has_main = 0;
    int status = 0;
    while (status == 0 && fgets(line, sizeof line, in)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(in)) {
            fprintf(stderr, "%s:%ld: line longer than %d bytes\n", guide, lineno, MAX_LINE - 2);
            status = 1;
            break;
        }
        chomp(line);
        if (!out) {
            if (strcmp(line, "```c") != 0)
                continue;
            if (++block > n_out) {
                fprintf(stderr,
                        "%s:%ld: block %d, but the build expects %d blocks; "
                        "reconfigure (meson setup --reconfigure)\n",
                        guide, lineno, block, n_out);
                status = 1;
                break;
            }
            const char *path = argv[1 + block];
            out = fopen(path, "w");
            if (!out) {
                perror(path);
                status = 1;
                break;
            }
            /* The next line of the guide is the output's line 1. */
            fprintf(out, "#line %ld \"%s\"\n", lineno + 1, guide);
            open_line = lineno;
            first = 1;
            has_main = 0;
            continue;
        }
        if (strcmp(line, "```") == 0) {
            if (!has_main) {
                fprintf(stderr,
                        "%s:%ld: the block has no main function; every C block of the "
                        "guide is a complete program\n",
                        guide, open_line);
                status = 1;
            }
            if (fclose(out) != 0) {
                perror(argv[1 + block]);
                status = 1;
            }
            out = NULL;
            continue;
        }
        if (first) {
            const char *name = base_name(argv[1 + block]);
            if (!header_ok(line, name)) {
                fprintf(stderr, "%s:%ld: a C block must begin with the line \"/* %s: ...\"\n",
                        guide, lineno, name);
                status = 1;
            }
            first = 0;
        }
        if (strstr(line, "int main("))
            has_main = 1;
        fprintf(out, "%s\n", line);
    }
    if (ferror(in)) {
        perror(guide);
        status = 1;
    }
    fclose(in);
    if (out) {
        if (status == 0)
            fprintf(stderr, "%s:%ld: the block is never closed with ```\n", guide, open_line);
        fclose(out);
        status = 1;
    }
    if (status == 0 && block != n_out) {
        fprintf(stderr,
                "%s: %d blocks, but the build expects %d; reconfigure "
                "(meson setup --reconfigure)\n",
                guide, block, n_out);
        status = 1;
    }
    return status;
}
