"""Reading the results table, labelling and grouping runs (conditions, ratio axes, repeats), the
model-free comparison, corpora manifests and unigram diagnostics. Imports only `core` (and, for
unigram diagnostics only, data_prep's token-file reader and tokenizer loader)."""
