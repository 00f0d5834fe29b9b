/* `synapsex run`: raw-prompt generation on a GGUF model (being built). */
#include "cli/cli.h"

#include <stdio.h>

int sx_cli_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "synapsex run: the engine is not built yet\n");
    return 1;
}
