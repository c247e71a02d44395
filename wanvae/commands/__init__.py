"""The `wanvae` command line: one module per command group over a static table, thin over the library."""
