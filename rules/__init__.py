"""One module per mm review lesson; each exports its rule class as RULE."""
