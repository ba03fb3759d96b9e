"""Load the gates plugin for this repository (other repositories get it through the
``pytest11`` entry point once the package is installed)."""

pytest_plugins = ["gates.plugin"]
