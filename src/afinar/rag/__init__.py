"""RAG: loaders, structure-aware chunking, embeddings, hybrid retrieval with access control,
knowledge bases, memories, tools and grounded answers with citations."""
