"""Gallery index: FAISS vector indexes and SQL metadata."""
