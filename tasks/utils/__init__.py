"""Small helpers that every part of ``tasks`` may use (data code included): progress bars,
atomic file writes, which process is the main one. They import nothing else of the repository."""
