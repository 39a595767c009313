"""The numbers the diagnose rules judge by, each with why it is where it is. Bump
`diagnose.VERSION` when one changes, so cached diagnostics.json files are recomputed."""

# collapse: one class gets >= 95% of predictions (leaves room for a handful of stray predictions)
COLLAPSE_SHARE = 0.95
# collapse: ...and the other classes are (almost) never found: their mean recall is at most 10%
COLLAPSE_OTHER_RECALL = 0.10
# "accuracy = majority baseline": within 1 point (one or two examples on a small eval split)
BASELINE_ACC_MARGIN = 0.01
# "loss = loss of predicting the training prior": within 10% of that cross-entropy
PRIOR_LOSS_TOL = 0.10
# no learning: the train loss moves by less than 5% of its first value over the whole run
NO_LEARNING_REL_CHANGE = 0.05
# no learning: ...and validation accuracy never gets more than 2 points above the majority
NO_LEARNING_ACC_MARGIN = 0.02
# a loss "still falls" when it dropped by at least 5% (relative) in the last epoch
STILL_FALLING_REL = 0.05
# collapse: fewer optimizer steps than this cannot show learning (warmup alone may take them)
MIN_STEPS_TO_JUDGE = 20
# divergence: an epoch-mean train loss above 2x ln(K) (uniform guessing) means the model blew up
DIVERGE_LOSS_FACTOR = 2.0
# divergence: a loss 1.5x its previous value is a spike, not noise ...
DIVERGE_RISE = 1.5
# ... when it also rose by at least 10% of ln(K) (tiny losses near 0 may double harmlessly)
DIVERGE_MIN_ABS_RISE = 0.10
# divergence: a validation spike counts when the loss doubles and ends above ln(K)
DIVERGE_VAL_SPIKE = 2.0
# overfitting: validation loss above its minimum for >= 2 evaluations (one may be noise)
OVERFIT_MIN_EVALS_AFTER = 2
# overfitting: ...and the last one at least 10% above the minimum
OVERFIT_MIN_RISE = 0.10
# over-confidence: validation loss >= 20% above its minimum while accuracy gained >= 2 points
OVERCONFIDENT_LOSS_RISE = 0.20
OVERCONFIDENT_ACC_GAIN = 0.02
# metric/loss mismatch: accuracy 5 points below majority with a loss 20% below the prior's
MISMATCH_ACC_MARGIN = 0.05
MISMATCH_LOSS_RATIO = 0.80
# underfitting: train accuracy at most 5 points above validation (no generalisation gap yet) ...
UNDERFIT_GAP = 0.05
# ... and below 95% (a model that fits its training data is not underfitting)
UNDERFIT_MAX_TRAIN_ACC = 0.95
# ... and still rising by >= 1 point in the last epoch (with the loss still falling, STILL_FALLING_REL)
UNDERFIT_RISING = 0.01
# padding: more than 30% of the token slots of train batches are padding (compute thrown away)
PADDING_WASTE_MAX = 0.30
# truncation: more than 10% of the training examples hit encode.max_length
TRUNCATED_SHARE_MAX = 0.10
# group: a seed std above 2 accuracy points is larger than most differences worth reporting
SEED_STD_MAX = 0.02
# group: seed std >= 1x the mean difference between configs means the ranking is seed noise
SEED_NOISE_RATIO = 1.0
# usual peak learning rates per model.init; outside this range a fix names a better value
LR_RANGE = {"pretrained": (1e-5, 3e-4), "random": (1e-4, 1e-2)}
# multilabel: the empty set predicted for >= 90% of the examples while most have labels
EMPTY_SET_SHARE = 0.90
# multilabel: a label predicted for >= 95% of the examples while its true share is below 50%
ALWAYS_ON_SHARE, ALWAYS_ON_TRUE_MAX = 0.95, 0.50
# multilabel: labels that occur in the scored split but are never predicted; a warning from 25%
# of those labels on (a few rare labels never predicted is common and only informational)
NEVER_PREDICTED_WARN = 0.25
# regression: predictions whose std is below 10% of the targets' std are (nearly) constant
CONSTANT_PRED_RATIO = 0.10
# regression: more than 5% of validation / test targets outside the train range (extrapolation)
OUTSIDE_RANGE_WARN = 0.05
# vocabulary coverage: more than 5% of a split's tokens are [UNK] (the model reads a placeholder where
# the text was) or more than 1% of its examples are nothing but [UNK] (no input at all, only the prior)
UNK_SHARE_MAX = 0.05
ALL_UNK_SHARE_MAX = 0.01
# (its fix names N = the most frequent unknown units of train covering 95% of the train [UNK]
# occurrences, the data summary's `to_cover` at encode/unknown.py COVER: the long tail would add
# embeddings that only a few texts ever train)
