import pandas as pd
import pytest

from mlops.domain.window import Window, WindowError, fitted_part, window_for

pytestmark = pytest.mark.unit


def test_a_label_parses_back_to_the_same_window():
    window = Window.ending("2013-04-01", 3)
    assert window.label() == "2013-01-01..2013-04-01"
    assert Window.parse(window.label()) == window
    assert Window.parse("all") == Window.everything() and Window.everything().label() == "all"


@pytest.mark.parametrize("label", ["", "2013-01-01", "2013-01-01..", "..2013-02-01", "jan..feb"])
def test_a_bad_label_is_refused_with_its_text(label):
    with pytest.raises(WindowError, match=r"window label|not a date"):
        Window.parse(label)


def test_cut_is_half_open_and_in_utc():
    df = pd.DataFrame(
        {
            "t": pd.to_datetime(
                ["2012-12-31 23:00", "2013-01-01 00:00", "2013-01-31 23:59", "2013-02-01 00:00"], utc=True
            )
        }
    )
    inside = Window.ending("2013-02-01", 1).cut(df, "t")
    assert inside["t"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2013-01-01 00:00", "2013-01-31 23:59"]
    assert len(Window.everything().cut(df, "t")) == 4 and len(Window.ending("2013-02-01", 1).cut(df, None)) == 4


def test_overlap():
    spring, summer = Window.parse("2013-03-01..2013-06-01"), Window.parse("2013-06-01..2013-09-01")
    assert not spring.overlaps(summer) and spring.overlaps(Window.parse("2013-05-01..2013-07-01"))
    assert Window.everything().overlaps(spring)


def test_without_as_of_the_window_ends_just_after_the_latest_row():
    df = pd.DataFrame({"t": pd.to_datetime(["2013-01-05 00:00", "2013-03-31 22:00"], utc=True)})
    window = window_for(df, "t", None, 1)
    assert window.end > df["t"].max() and window.cut(df, "t")["t"].tolist() == [df["t"].iloc[1]]
    assert window_for(df, None, "2013-02-01", 1) == Window.everything()


def test_the_fitted_part_ends_at_the_first_held_out_row_to_the_second():
    fitted = fitted_part(Window.ending("2013-02-01", 1), pd.Timestamp("2013-01-25 14:00", tz="UTC"))
    assert fitted.label() == "2013-01-01..2013-01-25T14:00:00"
    assert Window.parse(fitted.label()) == fitted
    assert fitted_part(Window.everything(), None) == Window.everything()


@pytest.mark.parametrize(
    ("newest", "end"),
    [
        ("2013-12-31 23:59", "2014-01-01"),  # a row on the month's last day: that month is complete
        ("2013-12-30 10:00", "2013-12-01"),  # the month is still arriving: up to its first day
        ("2013-02-28 00:00", "2013-03-01"),
        ("2013-03-01 00:00", "2013-03-01"),
    ],
)
def test_latest_ends_with_the_newest_complete_month(newest: str, end: str) -> None:
    import pandas as pd

    from mlops.domain.window import LATEST, window_for

    frame = pd.DataFrame({"t": [pd.Timestamp("2013-01-05", tz="UTC"), pd.Timestamp(newest, tz="UTC")]})
    window = window_for(frame, "t", LATEST, 2)
    assert window.end == pd.Timestamp(end, tz="UTC") and window.start == window.end - pd.DateOffset(months=2)


def test_a_flow_as_of_is_a_date_latest_or_the_default() -> None:
    from datetime import date

    from mlops.domain.window import resolve_as_of

    assert resolve_as_of(date(2013, 7, 1), "2013-04-01") == "2013-07-01"
    assert resolve_as_of("latest", "2013-04-01") == "latest"
    assert resolve_as_of(None, "2013-04-01") == "2013-04-01"
