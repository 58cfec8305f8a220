"""semisep.evaluation: separation of whole files, BSS Eval through museval, reports."""
