"""Pipeline stages, one module each (keiko.pipeline lists them): `run(ctx) -> its typed result`
(keiko.contract), with I/O through the context's layout and resources."""
