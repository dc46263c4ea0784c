"""configs/bert_classification.py (LiBai's quick-start config) with a classification dataset:
the Folio genre passages of projects/shakespeare, as a user's project would give it."""
from libai.config import LazyCall, LazyConfig
from libai.data.build import build_nlp_test_loader, build_nlp_train_loader
from libai.evaluation import ClsEvaluator
from projects.shakespeare.folio_genre import FolioGenreDataset

_cfg = LazyConfig.load("configs/bert_classification.py")
model, train, optim, graph, tokenization = _cfg.model, _cfg.train, _cfg.optim, _cfg.graph, _cfg.tokenization
model.cfg.num_labels = 3
dataloader = _cfg.dataloader
dataloader.train = LazyCall(build_nlp_train_loader)(
    dataset=[LazyCall(FolioGenreDataset)(train=True, max_seq_length=32)], num_workers=0
)
dataloader.test = [
    LazyCall(build_nlp_test_loader)(dataset=LazyCall(FolioGenreDataset)(train=False, max_seq_length=32), num_workers=0)
]
train.evaluation.evaluator = LazyCall(ClsEvaluator)(topk=[1])
train.evaluation.eval_metric = "Acc@1"
