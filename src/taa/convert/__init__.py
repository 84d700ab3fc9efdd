"""Weight converters: explicit key maps plus layout fixes, checked key by key and shape by shape."""
