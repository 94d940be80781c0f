FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir .
ENV SEGMENTS_HOST=0.0.0.0 SEGMENTS_DATA_DIR=/data
EXPOSE 8001 8002 8003
CMD ["segments", "--help"]
