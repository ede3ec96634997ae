"""The `pixdiff` commands, one module per group (`recipes`: info and ls; `convert`; `train`; `sample`;
`edit`: edit, inpaint, invert, interpolate; `evaluate`: eval and eval-sanity; `bench`; `data`), over
one module of shared options and error reporting (`options`). `pixdiff.cli` registers them.

A command module imports torch and the rest of pixdiff inside its functions, so `pixdiff --help`
stays instant and torch-free."""
