"""Problems to reason about, and the TALE budget search that labels them."""
