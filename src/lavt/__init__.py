"""lavt: Language-Aware Vision Transformers for referring segmentation."""
