"""Serving: ONNX export (torch side) and runtime embedders (no torch)."""
