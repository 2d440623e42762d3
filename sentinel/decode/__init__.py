"""Decoders: link and network layers, flows, TCP reassembly and the application protocols."""
