"""vLLM as a process: command line, launch and process tree, log parsing and failure
classes, probes, flag safety, multimodal rules. No Optuna."""
