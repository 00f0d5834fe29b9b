/* The engine tools of the synapsex binary. Each takes the arguments after its
 * command word (argv[0] is the command word itself) and returns the process
 * exit status: 0 on success, 1 on failure, 2 on a usage error. */
#ifndef SX_CLI_CLI_H
#define SX_CLI_CLI_H

/* synapsex run --model F --prompt TEXT ... : generate text on stdout. */
int sx_cli_run(int argc, char **argv);

/* synapsex model inspect F | model synth --shape S --type T --out F */
int sx_cli_model(int argc, char **argv);

#endif
