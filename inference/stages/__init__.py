"""One module per pipeline stage: load, detect, segment, fit, export, measure, render."""
