"""Draw the traffic Space's examples: a still street scene and a short GIF of vehicles on a road.

Run from the repository root: ``python spaces/traffic/make_examples.py``. The pictures are cartoons drawn here
(MIT, like the repository); the GIF's geometry matches the example rules in ``app.py``:

- a car drives right and crosses the counting line x=240, then the stop line x=300 while the light is red;
- a bus drives left and crosses both lines the other way (the stop line only binds traffic going right);
- a car stands still inside the "no parking" zone for the whole clip.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

EXAMPLES = Path(__file__).resolve().parent / "examples"
SIZE = (480, 320)
SKY, ROAD, MARK, NO_PARKING = (135, 190, 235), (70, 70, 75), (245, 245, 245), (230, 200, 40)
FRAMES = 12
FRAME_MS = 250  # 4 frames per second


def background(draw: ImageDraw.ImageDraw) -> None:
    width, height = SIZE
    draw.rectangle([0, 0, width, 150], fill=SKY)
    draw.rectangle([0, 150, width, height], fill=ROAD)
    for x in range(0, width, 60):
        draw.rectangle([x + 10, 232, x + 40, 237], fill=MARK)
    draw.rectangle([390, 270, 470, 316], outline=NO_PARKING, width=3)  # the painted no-parking box
    draw.line([(390, 270), (470, 316)], fill=NO_PARKING, width=2)


def car(draw: ImageDraw.ImageDraw, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """A side-view car whose wheels touch the road at y; x is its left end (90 px long)."""
    draw.rounded_rectangle([x, y - 38, x + 90, y - 12], radius=8, fill=colour)
    draw.rounded_rectangle([x + 18, y - 58, x + 70, y - 36], radius=6, fill=colour)
    draw.rectangle([x + 26, y - 53, x + 62, y - 40], fill=(200, 230, 245))
    for wheel in (x + 20, x + 70):
        draw.ellipse([wheel - 11, y - 22, wheel + 11, y], fill=(20, 20, 20))


def bus(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    """A side-view bus whose wheels touch the road at y; x is its left end (160 px long)."""
    draw.rounded_rectangle([x, y - 90, x + 160, y - 14], radius=10, fill=(240, 190, 30))
    for wx in range(x + 10, x + 150, 30):
        draw.rectangle([wx, y - 80, wx + 20, y - 60], fill=(200, 230, 245))
    for wheel in (x + 30, x + 130):
        draw.ellipse([wheel - 14, y - 28, wheel + 14, y], fill=(20, 20, 20))


def person(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.ellipse([x - 10, y - 95, x + 10, y - 75], fill=(230, 190, 160))
    draw.rectangle([x - 12, y - 75, x + 12, y - 35], fill=(40, 140, 70))
    draw.rectangle([x - 10, y - 35, x + 10, y], fill=(30, 30, 60))


def street() -> Image.Image:
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    background(draw)
    bus(draw, 150, 225)
    car(draw, 20, 300, (200, 30, 30))
    car(draw, 300, 300, (30, 70, 200))
    person(draw, 440, 230)
    return image


def clip_frame(k: int) -> Image.Image:
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    background(draw)
    bus(draw, 410 - 30 * k, 225)  # drives left along the far lane
    car(draw, 385, 305, (30, 140, 60))  # parked in the no-parking box
    car(draw, 10 + 25 * k, 300, (200, 30, 30))  # drives right along the near lane
    return image


def main() -> None:
    EXAMPLES.mkdir(exist_ok=True)
    street().save(EXAMPLES / "street.png", optimize=True)
    frames = [clip_frame(k) for k in range(FRAMES)]
    frames[0].save(
        EXAMPLES / "traffic.gif", save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0
    )


if __name__ == "__main__":
    main()
