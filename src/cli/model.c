/* `synapsex model inspect|synth`: GGUF tools (being built). */
#include "cli/cli.h"

#include <stdio.h>

int sx_cli_model(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "synapsex model: the engine is not built yet\n");
    return 1;
}
