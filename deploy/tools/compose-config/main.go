// compose-config loads a Compose file with compose-go, the loader `docker compose config` is built
// on: schema validation, interpolation, normalisation and the consistency checks (unknown services
// in depends_on, undefined networks/volumes/configs, ...). It prints the resolved model as YAML,
// or the loader's error on stderr with exit code 1. Used by scripts/compose.sh because this
// machine has no Docker engine and no compose plugin.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-config COMPOSE_FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		os.Args[1:],
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithResolvedPaths(true),
		cli.WithDefaultProfiles(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
