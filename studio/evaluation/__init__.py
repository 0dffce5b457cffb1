"""The scorecard: does a run learn its subject, and which checkpoint should the user keep?

A run's checkpoints (and the untouched base model, once) draw a fixed set of evaluation prompts with fixed seeds;
a scorer turns those pictures and the user's photos into four numbers (the DreamBooth paper's):

    subject fidelity   subject-prompt generations look like the user's photos
    prompt fidelity    recontextualised subject prompts are followed
    drift (PRES)       plain class-prompt generations look like the subject (lower is better)
    diversity (DIV)    class-prompt generations differ from one another

    prompts.py    the evaluation prompts, derived from the identifier and class noun (or the user's own)
    scores.py     what a scorer takes and gives (`Scorer`, `EvalImages`, `Scores`)
    world.py      the built-in world's scorer: the judge reads each generation exactly
    embedding.py  real models: DINOv2 and CLIP embeddings, loaded lazily from a hub id or a folder
    drawing.py    drawing the evaluation pictures (the base model's cached across runs)
    pick.py       the rule that picks the checkpoint to keep (one pure function)
    scorecard.py  rows from a run's Score events; the table, the JSON and the model card's markdown
    session.py    scoring during training: what the loop calls when a checkpoint is written and at the end
    rescore.py    scoring an existing run folder (`studio score`)
    keep.py       making a checkpoint the run's output (the pick, or the user's choice)

A scorer is data in, numbers out; it never stops a run: a failure is a note on the Score event and a Notice.
A number that cannot be measured is NaN in the event (None in JSON), never an invented value.
"""
