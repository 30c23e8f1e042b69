"""The golden cases computed with the original authors' code (see golden/README.md)."""
import pathlib

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))


def golden_kwargs(g):
    """ the constructor arguments stored in a golden case """
    return dict(output_dim=int(g["output_dim"]), warmup_teacher_temp=float(g["warmup_teacher_temp"]),
                teacher_temp=float(g["teacher_temp"]),
                warmup_teacher_temp_epochs=int(g["warmup_teacher_temp_epochs"]),
                student_temp=float(g["student_temp"]), center_momentum=float(g["center_momentum"]))
