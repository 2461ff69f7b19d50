"""Evaluation, bottom to top: run directories and their names (``runs``), asking and grading (``answer``),
budget sources (``sources``), one configuration (``evaluate``), a grid (``ablate``), paired statistics
(``paired``), and the success-curve study on recorded ladders (``frontier``)."""
