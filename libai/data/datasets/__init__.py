"""Dataset readers that work offline."""
from libai.data.datasets.bert_dataset import BertDataset
from libai.data.datasets.cifar import CIFAR10Dataset, CIFAR100Dataset
from libai.data.datasets.gpt_dataset import GPT2Dataset
from libai.data.datasets.imagenet import ImageNetDataset
from libai.data.datasets.mnist import MNISTDataset
from libai.data.datasets.roberta_dataset import RobertaDataset
from libai.data.datasets.sft_dataset import SFTDataset
from libai.data.datasets.t5_dataset import T5Dataset

__all__ = ["MNISTDataset", "GPT2Dataset", "BertDataset", "T5Dataset", "SFTDataset", "RobertaDataset",
           "ImageNetDataset", "CIFAR10Dataset", "CIFAR100Dataset"]
