"""What rules read: MIME walking and decoding, the views (decoded headers, text, HTML as rendered, URLs), HTML to text, phrase folding."""
