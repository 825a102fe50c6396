"""Why no MLP computes a layer: the reasons both frontends' refusals give (a leaf)."""

#: dividing by statistics of the sample itself
NORMALIZES = "normalizes each sample by statistics computed from it (a division by computed values)"
#: a product of two values computed from the input
ATTENDS = "multiplies values computed from the input (attention)"

#: Keras layer classes that no MLP computes, and why
KERAS_NO_MLP_FORM = {
    "LayerNormalization": NORMALIZES, "GroupNormalization": NORMALIZES,
    "UnitNormalization": "divides each sample by its norm (a division by computed values)",
    "MultiHeadAttention": ATTENDS, "Attention": ATTENDS, "AdditiveAttention": ATTENDS,
    "GroupQueryAttention": ATTENDS,
}
