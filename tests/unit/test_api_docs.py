"""docs/api.md is generated from the proto comments by tools/gen_api_docs.py and must stay so."""

from __future__ import annotations

from pathlib import Path

from tools import gen_api_docs
from tools.gen_protos import PUBLIC_PROTOS


def test_api_docs_are_up_to_date() -> None:
    diff = gen_api_docs.check()
    assert not diff, (
        f"docs/api.md is out of date: run `{gen_api_docs.COMMAND}` and commit the result.\n{diff}"
    )


def test_every_public_rpc_is_documented_and_no_internal_one() -> None:
    page = gen_api_docs.generate()
    public = [
        file for file in gen_api_docs.compile_descriptors().file if file.name in PUBLIC_PROTOS
    ]

    assert public
    for file in public:
        for service in file.service:
            for method in service.method:
                assert f'<a id="{file.package}.{service.name}.{method.name}"></a>' in page
    assert "dataaccess" not in page.lower()


def test_check_reports_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text("# an old page\n", encoding="utf-8")

    diff = gen_api_docs.check(stale)

    assert "-# an old page" in diff
    assert "+# meshgram API reference" in diff
