"""Media I/O: probing and decoding with PyAV, splitting with the bundled ffmpeg binary."""
