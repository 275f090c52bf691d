"""Reports from a run's data: JSON (full and partial), JUnit, HTML and Markdown, the environment
fingerprint. Nothing here renders to a terminal (that is :mod:`esmdiv.cli.console`); importing this
package loads no torch."""
