"""Torch ReID models. Each takes ``(N, 3, H, W)`` float32 RGB 0..255 and normalises inside."""
