"""Where models live: model folders (safetensors + config.json + card), training run folders, MODEL sources,
named models and the Hugging Face Hub."""
