"""Text analysis and the search engines behind one interface: tantivy embedded, Elasticsearch at scale."""
