"""Storage: what korag keeps and how. The chunk store (Qdrant through qdrant-client, or Qdrant
Edge in-process), the document registry, uploaded bytes (blobs and prepared parses), metadata
filters, store migration, and the free-disk reserve. Imports only korag's ground (settings,
types, errors, rules)."""
