"""The model: networks and their arguments (:mod:`.nets`), the trained-model object
(:mod:`.trained`), factor tables (:mod:`.factors`) and the top-N block scorer (:mod:`.topn`)."""
from cfmodel.model.nets import MODELS, CFModule, ModelArgs, dot_head, head_module, sigmoid_range
from cfmodel.model.trained import TrainedModel

__all__ = ["MODELS", "CFModule", "ModelArgs", "TrainedModel", "dot_head", "head_module", "sigmoid_range"]
