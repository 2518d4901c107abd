"""Activities service: partner apps post what the teams do."""
