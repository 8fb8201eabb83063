"""Where models and adapters come from: built-in tiny models, saved folders, Hub ids; generated adapters."""
