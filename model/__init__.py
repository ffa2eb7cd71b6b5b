"""The bundled LLaMA trainer: model (`llama`), data (`data`), checkpoints, metrics, training loop
(`train`, the `corpusmill train` command) and export to the Hugging Face Llama format (`export_hf`)."""
