"""One module per behaviour of the conversations part of the connectors service."""
