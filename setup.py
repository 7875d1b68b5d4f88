"""Build of the optional C step of the student; everything else is declared in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler), the install goes on and
the student runs its numpy step, which computes the same update (tests hold the two together).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kdstream.student._kernel",
            sources=[
                "student/_kernel.c",
                "student/_kernel_base.c",
                "student/_kernel_avx2.c",
                "student/_kernel_avx512.c",
                "student/_kernel_seen.c",
            ],
            depends=["student/_kernel.h", "student/_kernel_body.h"],
            # Reassociation lets dot products vectorise; no -ffinite-math-only: -inf marks
            # padding and masked logits, so isfinite() must stay a real test.
            extra_compile_args=[
                "-O3",
                "-fno-math-errno",
                "-fno-trapping-math",
                "-fno-signed-zeros",
                "-fassociative-math",
                "-Wno-psabi",  # vector helpers are inlined: no ABI crosses a call
            ],
            optional=True,
        )
    ]
)
