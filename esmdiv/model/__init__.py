"""Models: loading ESM-2 onto fair-esm's ESM2 from any spec, prediction heads, the Hugging Face peer."""
