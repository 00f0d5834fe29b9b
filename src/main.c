/* synapsex: one binary that serves the gateway and runs the engine tools.
 * main() only dispatches on the first argument; each command lives in
 * src/cli/. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "version") == 0) {
        printf("synapsex 0.1.0\n");
        return 0;
    }
    fprintf(stderr, "usage: synapsex serve|run|model|version [--help]\n");
    return 2;
}
