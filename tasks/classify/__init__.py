# The classification networks join the registry of tasks.networks whenever the task is used, so
# that ``tasks.networks.build_network("resnet50", "cifar100")`` works in every part of it.
from . import models  # noqa: F401
