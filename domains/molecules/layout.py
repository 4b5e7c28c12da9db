"""Where the molecular graph sits in a feature row: sizes and column offsets (numpy only).

Kept apart from ``featurize`` so that code which only needs the layout (graph encoders, training
loops) imports without RDKit.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per-atom features (ATOM_FEATURES columns, in this order):
#   element one-hot C, N, O, S, F, Cl, Br, I, P, other (10) | degree one-hot 0..4, 5+ (6) |
#   formal charge clipped to [-2, 2] (1) | aromatic (1) |
#   hybridisation one-hot SP, SP2, SP3, SP3D/SP3D2/SP2D, other (5) |
#   total H count one-hot 0, 1, 2, 3+ (4) | in ring (1)
GRAPH_ELEMENTS = (6, 7, 8, 16, 9, 17, 35, 53, 15)
N_HYB_GROUPS = 4  # SP, SP2, SP3, SP3D/SP3D2/SP2D (featurize maps RDKit's types onto them)
# First column of each feature group.
COL_ELEM = 0
COL_DEG = COL_ELEM + len(GRAPH_ELEMENTS) + 1
COL_CHARGE = COL_DEG + 6
COL_AROM = COL_CHARGE + 1
COL_HYB = COL_AROM + 1
COL_NH = COL_HYB + N_HYB_GROUPS + 1
COL_RING = COL_NH + 4
ATOM_FEATURES = COL_RING + 1  # 28


@dataclass(frozen=True, slots=True)
class GraphLayout:
    """Where the graph block sits in a feature row (all offsets from the start of the row).

    A row is ``[fingerprint | descriptors | atoms | mask | adjacency]``:

    * ``atoms``: ``n_atoms × atom_features`` row-major atom features (zero rows for absent atoms),
    * ``mask``: ``n_atoms`` values, 1.0 for a present atom and 0.0 for padding,
    * ``adjacency``: ``n_atoms × n_atoms`` row-major, symmetric, bond order weights
      (1 single, 1.5 aromatic, 2 double, 3 triple, other bond types 1, zero-order bonds 0),
      zero diagonal.
    """

    dense_dim: int
    n_atoms: int
    atom_features: int = ATOM_FEATURES

    @property
    def atoms_offset(self) -> int:
        """Start of the atom-feature matrix."""
        return self.dense_dim

    @property
    def mask_offset(self) -> int:
        """Start of the atom mask."""
        return self.dense_dim + self.n_atoms * self.atom_features

    @property
    def adj_offset(self) -> int:
        """Start of the flattened adjacency matrix."""
        return self.mask_offset + self.n_atoms

    @property
    def size(self) -> int:
        """Length of the graph block."""
        return graph_block_size(self.n_atoms, self.atom_features)

    @property
    def dim(self) -> int:
        """Length of the whole row."""
        return self.dense_dim + self.size


def graph_block_size(n_atoms: int, atom_features: int = ATOM_FEATURES) -> int:
    """Length of the graph block for ``n_atoms`` atoms (0 when off)."""
    return n_atoms * atom_features + n_atoms + n_atoms * n_atoms
