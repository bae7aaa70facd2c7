"""Where play events come from: the synthetic stream, and the app's landing files (read, written, watched)."""
