// Placeholder: filled by the #5 work in progress.
