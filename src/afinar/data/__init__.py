"""Datasets: reading, formats, validation against the target model's tokenizer and template, token
statistics, loss-mask previews, splits and leak checks, PII scanning and converters."""
