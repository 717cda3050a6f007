/* attestproxy: an attesting reverse proxy for AWS Nitro Enclaves. See README.md. */
#include "app/cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
